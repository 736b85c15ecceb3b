-- $1 sid
SELECT EXISTS (SELECT 1 FROM console_sign_outs WHERE sid = $1)
