"""E-mail over SMTP (STARTTLS, implicit TLS or plain for a local relay). Host and port are
configurable; the password never appears in an error."""
from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from services.alerts.alert import Alert
from services.alerts.channel import DeliveryError


class EmailChannel:
    name = "email"

    def __init__(self, host: str, port: int, sender: str, to: list[str], security: str = "starttls",
                 username: str | None = None, password: str | None = None, timeout_s: float = 10.0):
        self.host, self.port, self.sender, self.to = host, port, sender, list(to)
        self.security, self.username, self.password, self.timeout_s = security, username, password, timeout_s

    def message(self, alert: Alert) -> EmailMessage:
        m = EmailMessage()
        m["Subject"] = f"[scalper] {alert.severity}{' resolved' if alert.resolved else ''}: {alert.title}"
        m["From"] = self.sender
        m["To"] = ", ".join(self.to)
        m["Date"] = formatdate(localtime=False)
        m["Message-ID"] = make_msgid(domain="scalper.local")
        m["X-Scalper-Kind"] = alert.kind
        m["X-Scalper-Severity"] = alert.severity
        m.set_content(alert.body() + "\n")
        return m

    def send(self, alert: Alert) -> None:
        msg = self.message(alert)
        try:
            if self.security == "ssl":
                conn = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s,
                                        context=ssl.create_default_context())
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            with conn:
                if self.security == "starttls":
                    conn.starttls(context=ssl.create_default_context())
                if self.username:
                    conn.login(self.username, self.password or "")
                conn.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"SMTP login refused ({exc.smtp_code})", retry=False) from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError("SMTP server refused every recipient", retry=False) from None
        except (smtplib.SMTPException, OSError) as exc:
            code = getattr(exc, "smtp_code", None)
            raise DeliveryError(f"{type(exc).__name__}{f' {code}' if code else ''} "
                                f"(SMTP {self.host}:{self.port})") from None
