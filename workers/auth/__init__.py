"""Who may ask for what: signed task messages (`signing.py`) and this host's policy
(`policy.py`). Pure: no Celery, no Redis; `tasks/guard.py` applies them in the worker and
`tasks/app.py` signs what a zrepq app sends."""
