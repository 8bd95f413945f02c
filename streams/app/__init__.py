"""The Faust stream processor: app, windows agent, ``dbopt worker`` command."""
