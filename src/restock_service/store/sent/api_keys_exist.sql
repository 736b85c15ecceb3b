-- no parameters
SELECT EXISTS (SELECT FROM api_keys) AS exist
