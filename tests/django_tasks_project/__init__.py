"""A Django project whose mail is queued on django.tasks with django-tasks-db's database backend.

Run in subprocesses by tests/test_django_tasks.py (migrate, enqueue, ``db_worker``): its
SQLite file and the SMTP server's port come from the environment.
"""
