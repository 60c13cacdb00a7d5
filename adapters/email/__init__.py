"""Email adapter: core's Mailer over SMTP (aiosmtplib), and a local mailbox for the demo."""
