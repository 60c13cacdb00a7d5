"""Identity adapter: MSAL device flow and silent token acquisition, Graph validation calls.

The only package that imports msal. MSAL is synchronous: every call runs on this adapter's own
small thread pool (never the default executor) and polls exactly once per call.
"""
