"""gunicorn settings for the metrics of every worker in one scrape (docs/howto/metrics.md).

Start gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` in its environment, a directory that
belongs to this gunicorn alone::

    PROMETHEUS_MULTIPROC_DIR=/run/project-metrics gunicorn -c test_project/deploy/gunicorn.conf.py \\
        test_project.wsgi:application -b 127.0.0.1:8000 -w 4 --worker-connections 1000

The variable must be in the environment before ``prometheus_client`` is imported anywhere,
master included: not set from settings.py or from this file. Command-line options override
what is set here.
"""

from django_websocket.metrics import gunicorn_child_exit, gunicorn_on_starting

worker_class = "django_websocket.workers.GeventWebSocketWorker"

# Empties PROMETHEUS_MULTIPROC_DIR when gunicorn starts: the totals start again from zero.
on_starting = gunicorn_on_starting
# A worker that exits, or is killed, stops counting in django_websocket_connections at once.
child_exit = gunicorn_child_exit
