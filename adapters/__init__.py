"""Adapters: one package per technology, each implementing a core port or translating input.

Each third-party SDK is imported in exactly one adapter package.
"""
