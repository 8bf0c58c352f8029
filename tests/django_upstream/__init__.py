"""Django's own SMTP backend tests, run against smtp_backends.django.AsyncSMTPBackend."""
