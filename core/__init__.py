"""The renewal domain: pure Python, standard library only.

Must not import any SDK (slack, botbuilder, msal, sqlalchemy, aiohttp): adapters do that.
"""
