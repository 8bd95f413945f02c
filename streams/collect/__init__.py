"""``dbopt collect``: the database's own view (pure core in ``core``, reads in ``read``, the stage in ``agent``)."""
