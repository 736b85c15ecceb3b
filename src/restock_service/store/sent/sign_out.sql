-- $1 sid, $2 expires_at
INSERT INTO console_sign_outs (sid, expires_at) VALUES ($1, $2)
ON CONFLICT (sid) DO NOTHING
