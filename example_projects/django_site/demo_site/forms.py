"""The site's forms (their fields get Django's ids: ``id_name``, ``id_email``...)."""

from __future__ import annotations

from django import forms


class ContactForm(forms.Form):
    """A visitor's message to the staff."""

    name = forms.CharField(max_length=100)
    email = forms.EmailField(label="Your email")
    subject = forms.CharField(max_length=150)
    message = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}))


class NewsletterForm(forms.Form):
    """One newsletter issue, sent to every subscriber."""

    subject = forms.CharField(max_length=150)
    body = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text="Plain text; the HTML version is built from it.",
    )
