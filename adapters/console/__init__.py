"""Console adapter: a terminal chat for local development and the demo (ChatThreads on a stream).

Same commands and thread behaviour as Slack and Teams; holds no renewal logic.
"""
