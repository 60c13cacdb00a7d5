"""The sandbox identity provider: a local stand-in for Microsoft's identity platform and Graph.

It speaks the documented v2.0 protocol (discovery, devicecode, token, JWKS; Graph /organization
and /me) over HTTPS with its own CA, so unmodified MSAL talks to it. Its device login page is plain
HTTP on 127.0.0.1 so a person's browser opens it without a certificate warning. It exists for the
demo and the tests only; `renewbot serve` refuses to use it in production.
"""
