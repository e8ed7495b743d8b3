"""The webhook service: verified GitHub deliveries are routed to jobs in a durable queue, and
workers turn each job into one review posted on the pull request (or a stored human comment).

Layout: ``signature`` (HMAC check), ``events`` (routing, no web framework), ``app`` (the Flask
view: check, queue, answer), ``jobs`` / ``jobs_redis`` (the job table, which is the queue: leases,
dedupe, supersede, on SQLite or Redis Streams), ``queue`` (which store, and the door jobs go in
through), ``worker`` (job loop, hot reload), ``poster`` (one review per head commit), ``metrics``
(prometheus_client), ``server`` (gunicorn for ``revbot serve``), ``cli`` (``revbot serve`` /
``revbot worker``).
"""
