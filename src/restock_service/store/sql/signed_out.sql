-- Whether the console session :sid was signed out (a lapsed row only names a cookie that
-- has lapsed too).
SELECT EXISTS (SELECT 1 FROM console_sign_outs WHERE sid = :sid)
