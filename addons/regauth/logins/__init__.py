"""Password logins at the token endpoint: bcrypt checks and their caches (`credentials`),
failed-login limits (`limits`), the fair queue the checks run in (`queue`), and the Redis
store that shares the limits between replicas (`redis_store`, the only I/O here)."""
