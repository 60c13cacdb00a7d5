"""The sandbox identity provider: a local stand-in for Microsoft's identity platform and Graph.

It speaks the documented v2.0 protocol (discovery, devicecode, token, JWKS, adminconsent; Graph
/me, /me/memberOf, /organization, /sites/root, /servicePrincipals, /oauth2PermissionGrants) over
HTTPS with its own CA, so unmodified MSAL talks to it. Each behaviour follows a named page of
Microsoft's documentation (see the module of each endpoint). Its device login page is plain
HTTP on 127.0.0.1 so a person's browser opens it without a certificate warning. It exists for the
demo and the tests only; `renewbot serve` refuses to use it in production.
"""
