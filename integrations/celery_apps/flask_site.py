"""The Flask side: an app whose view queues messages through ``mail.send(msg, queue=True)``."""

from __future__ import annotations

import os

from flask import Flask, jsonify, request

from smtp_backends.flask import Mail, Message

mail = Mail()


def create_app() -> Flask:
    """The Flask app (MAIL_* settings from the environment, as the workers see them)."""
    app = Flask(__name__)
    app.config.update(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=int(os.environ.get("SMTP_BACKENDS_TEST_SMTP_PORT", "25")),
        MAIL_DEFAULT_SENDER="flask@example.com",
        MAIL_POOL_SIZE=1,
        MAIL_TIMEOUT=10,
        MAIL_LOCAL_HOSTNAME=os.environ.get("SMTP_BACKENDS_TEST_WORKER", "web") + ".test",
        MAIL_CELERY_QUEUE=os.environ.get("SMTP_BACKENDS_TEST_QUEUE", "mail"),
        MAIL_SUPPRESS_SEND=False,
    )
    mail.init_app(app)

    @app.post("/send")
    def send() -> object:
        count = int(request.args.get("n", "1"))
        tag = request.args.get("tag", "flask")
        for number in range(count):
            message = Message(
                f"{tag} {number}",
                recipients=[f"user{number}@example.com"],
                body=f"Message {number} of {count}.\n",
                extra_headers={"X-Test-Tag": tag},
            )
            mail.send(message, queue=True)
        return jsonify(queued=count)

    return app
