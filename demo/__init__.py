"""Demo: an iris classifier served by FastAPI behind CacheMiddleware."""
