"""The Faust worker: the app assembly (agents of every stage, web surface) and the ``dbopt worker`` command."""
