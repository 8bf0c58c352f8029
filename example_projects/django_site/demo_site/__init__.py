"""The example Django site: contact form, newsletter, password reset and error mails.

Every mail it sends goes through ``smtp_backends.django.AsyncSMTPBackend``.
"""
