"""Web adapter: the customer's onboarding page (the Auth URL) on aiohttp.

Translates page requests into RenewalService calls; holds no renewal logic.
"""
