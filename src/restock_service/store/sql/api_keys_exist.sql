-- Whether any key was ever made in the database (a revoked one keeps its row).
SELECT EXISTS (SELECT FROM api_keys) AS exist
