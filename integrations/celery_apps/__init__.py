"""Small Django and Flask apps sharing one Celery app, for integrations/test_celery.py.

Everything comes from environment variables set by :mod:`integrations.celery_support`
(the Redis URL, the SMTP port, the worker's name), so that the test process and the
worker subprocesses build the same apps.
"""
