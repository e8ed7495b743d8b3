"""The webhook service: verified GitHub deliveries are routed to jobs in a durable queue, and
workers turn each job into one review posted on the pull request (or a stored human comment).

Layout: ``signature`` (HMAC check), ``events`` (routing, no web framework), ``app`` (the Flask
view: check, queue, answer), ``jobs`` (the job table: leases, dedupe, supersede), ``queue`` (huey
transport), ``worker`` (job loop, hot reload), ``poster`` (one review per head commit), ``metrics``,
``cli`` (``revbot serve`` / ``revbot worker``).
"""
