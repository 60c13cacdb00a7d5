"""Webhooks to the platform's services, signed as the Standard Webhooks specification says."""
