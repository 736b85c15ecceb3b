-- Keep a signed-out console session's id until its cookie lapses (:expires_at), so that no
-- worker accepts the cookie again. Signing out twice keeps the first row.
INSERT INTO console_sign_outs (sid, expires_at) VALUES (:sid, :expires_at)
ON CONFLICT (sid) DO NOTHING
