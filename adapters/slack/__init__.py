"""Slack adapter: slash command and buttons in, Block Kit threads out, via slack-bolt's AsyncApp.

The only package that imports slack_bolt or slack_sdk. Translates; holds no renewal logic.
"""
