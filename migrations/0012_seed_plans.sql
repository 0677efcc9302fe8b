-- Plan quotas, plan features and the permission vocabulary.
--
-- Quotas are the spec's sample values; where the spec gives none, starter
-- gets a daily cap between free and pro, and enterprise is unlimited per day
-- with high per-minute limits (deals raise them through quota_overrides).

INSERT INTO quota_definitions (plan, resource, limit_value, time_window) VALUES
    ('free',       'rpm',              60,       'per_minute'),
    ('free',       'tpm',              40000,    'per_minute'),
    ('free',       'requests_per_day', 500,      'per_day'),
    ('starter',    'rpm',              500,      'per_minute'),
    ('starter',    'tpm',              400000,   'per_minute'),
    ('starter',    'requests_per_day', 50000,    'per_day'),
    ('pro',        'rpm',              3000,     'per_minute'),
    ('pro',        'tpm',              2000000,  'per_minute'),
    ('pro',        'requests_per_day', -1,       'per_day'),
    ('enterprise', 'rpm',              10000,    'per_minute'),
    ('enterprise', 'tpm',              10000000, 'per_minute'),
    ('enterprise', 'requests_per_day', -1,       'per_day')
ON CONFLICT DO NOTHING;

-- Every (plan, feature) pair has a row, so "not listed" never has to mean "off".
INSERT INTO plan_features (plan, feature, enabled)
SELECT p.plan, f.feature, f.feature = ANY (p.features)
FROM (VALUES
        ('free',       ARRAY['threads']),
        ('starter',    ARRAY['threads', 'webhooks', 'audit_log']),
        ('pro',        ARRAY['threads', 'webhooks', 'audit_log', 'semantic_cache', 'higher_rpm']),
        ('enterprise', ARRAY['threads', 'webhooks', 'audit_log', 'semantic_cache', 'higher_rpm', 'byok', 'sso'])
     ) AS p (plan, features)
CROSS JOIN (VALUES ('semantic_cache'), ('byok'), ('sso'), ('audit_log'), ('higher_rpm'), ('webhooks'), ('threads'))
     AS f (feature)
ON CONFLICT DO NOTHING;

INSERT INTO permissions (id, resource, action)
SELECT r.resource || ':' || a.action, r.resource, a.action
FROM (VALUES ('api_keys'), ('usage'), ('billing'), ('members'), ('settings'),
             ('roles'), ('credentials'), ('audit_log'), ('threads')) AS r (resource)
CROSS JOIN (VALUES ('create'), ('read'), ('update'), ('delete')) AS a (action)
ON CONFLICT DO NOTHING;
