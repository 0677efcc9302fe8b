-- The provider and model catalog Relay ships with.  Prices are USD per 1M
-- tokens at the providers' published list rates; operators change them with
-- later migrations or through the admin API.
--
-- The `test` provider is the in-process deterministic mock that rly_test_
-- keys use; it is never called over the network.

INSERT INTO providers (id, name, api, base_url, priority) VALUES
    ('openai',    'OpenAI',    'openai',    'https://api.openai.com/v1',      10),
    ('anthropic', 'Anthropic', 'anthropic', 'https://api.anthropic.com/v1',   20),
    ('mistral',   'Mistral',   'mistral',   'https://api.mistral.ai/v1',      30),
    ('groq',      'Groq',      'groq',      'https://api.groq.com/openai/v1', 40),
    ('test',      'Relay test mode', 'test', 'test://',                       1000)
ON CONFLICT (id) DO NOTHING;

INSERT INTO models (
    id, provider_id, relay_name, provider_name, display_name, kind,
    input_cost_per_1m, output_cost_per_1m, cache_read_cost_per_1m, cache_write_cost_per_1m,
    context_window, max_output_tokens, embedding_dimensions,
    supports_streaming, supports_functions, supports_vision
) VALUES
    -- OpenAI chat
    ('gpt-5.5',                'openai', 'gpt-5.5',                'gpt-5.5',                'GPT-5.5',              'chat',       2.50, 10.00, NULL,  NULL, 128000,  16384, NULL, true,  true,  true),
    ('gpt-4o',                 'openai', 'gpt-4o',                 'gpt-4o',                 'GPT-4o',               'chat',       2.50, 10.00, 1.25,  NULL, 128000,  16384, NULL, true,  true,  true),
    ('gpt-4o-mini',            'openai', 'gpt-4o-mini',            'gpt-4o-mini',            'GPT-4o mini',          'chat',       0.15,  0.60, 0.075, NULL, 128000,  16384, NULL, true,  true,  true),
    ('gpt-4.1',                'openai', 'gpt-4.1',                'gpt-4.1',                'GPT-4.1',              'chat',       2.00,  8.00, 0.50,  NULL, 1047576, 32768, NULL, true,  true,  true),
    ('gpt-4.1-mini',           'openai', 'gpt-4.1-mini',           'gpt-4.1-mini',           'GPT-4.1 mini',         'chat',       0.40,  1.60, 0.10,  NULL, 1047576, 32768, NULL, true,  true,  true),
    ('o3-mini',                'openai', 'o3-mini',                'o3-mini',                'o3-mini',              'chat',       1.10,  4.40, 0.55,  NULL, 200000, 100000, NULL, true,  true,  false),
    -- OpenAI legacy completions
    ('gpt-3.5-turbo-instruct', 'openai', 'gpt-3.5-turbo-instruct', 'gpt-3.5-turbo-instruct', 'GPT-3.5 Turbo Instruct', 'completion', 1.50,  2.00, NULL,  NULL, 4096,     4096, NULL, true,  false, false),
    -- OpenAI embeddings
    ('text-embedding-3-small', 'openai', 'text-embedding-3-small', 'text-embedding-3-small', 'Text Embedding 3 Small', 'embedding', 0.02, 0, NULL, NULL, 8191, NULL, 1536, false, false, false),
    ('text-embedding-3-large', 'openai', 'text-embedding-3-large', 'text-embedding-3-large', 'Text Embedding 3 Large', 'embedding', 0.13, 0, NULL, NULL, 8191, NULL, 3072, false, false, false),
    ('text-embedding-ada-002', 'openai', 'text-embedding-ada-002', 'text-embedding-ada-002', 'Text Embedding Ada 002', 'embedding', 0.10, 0, NULL, NULL, 8191, NULL, 1536, false, false, false),
    -- Anthropic (cache write = 1.25 x input, cache read = 0.1 x input)
    ('claude-3-5-sonnet-20241022', 'anthropic', 'claude-3-5-sonnet', 'claude-3-5-sonnet-20241022', 'Claude 3.5 Sonnet', 'chat', 3.00, 15.00, 0.30, 3.75, 200000,  8192, NULL, true, true, true),
    ('claude-3-5-haiku-20241022',  'anthropic', 'claude-3-5-haiku',  'claude-3-5-haiku-20241022',  'Claude 3.5 Haiku',  'chat', 0.80,  4.00, 0.08, 1.00, 200000,  8192, NULL, true, true, false),
    ('claude-sonnet-4-20250514',   'anthropic', 'claude-sonnet-4',   'claude-sonnet-4-20250514',   'Claude Sonnet 4',   'chat', 3.00, 15.00, 0.30, 3.75, 200000, 64000, NULL, true, true, true),
    -- Mistral
    ('mistral-large-2411', 'mistral', 'mistral-large', 'mistral-large-2411', 'Mistral Large', 'chat',      2.00, 6.00, NULL, NULL, 131072, NULL, NULL, true,  true,  false),
    ('mistral-small-2501', 'mistral', 'mistral-small', 'mistral-small-2501', 'Mistral Small', 'chat',      0.10, 0.30, NULL, NULL,  32768, NULL, NULL, true,  true,  false),
    ('mistral-embed',      'mistral', 'mistral-embed', 'mistral-embed',      'Mistral Embed', 'embedding', 0.10, 0,    NULL, NULL,   8192, NULL, 1024, false, false, false),
    -- Groq
    ('llama-3.3-70b-versatile', 'groq', 'llama-3.3-70b',        'llama-3.3-70b-versatile', 'Llama 3.3 70B',        'chat', 0.59, 0.79, NULL, NULL, 128000, 32768, NULL, true, true, false),
    ('llama-3.1-8b-instant',    'groq', 'llama-3.1-8b-instant', 'llama-3.1-8b-instant',    'Llama 3.1 8B Instant', 'chat', 0.05, 0.08, NULL, NULL, 131072,  8192, NULL, true, true, false)
ON CONFLICT (id) DO NOTHING;
