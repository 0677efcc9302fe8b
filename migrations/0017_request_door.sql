-- The public API dialect each request came through: `openai` (chat, completions, embeddings and the
-- typed gRPC service), `anthropic` (Messages), `responses` (OpenAI Responses). Old rows are OpenAI's.
ALTER TABLE requests ADD COLUMN door TEXT NOT NULL DEFAULT 'openai';
