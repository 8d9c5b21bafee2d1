"""Model workers on other machines: experiments run in a Ray Serve deployment, results come back as codec blobs.

* :mod:`workers.ray_serve`: the deployment (``ModelWorker``: a :class:`lens_core.pool.ModelPool`
  per replica, one replica per GPU) and ``python -m workers.ray_serve`` to deploy it.
* :mod:`workers.client`: what an app replica uses to send (experiment name, tokenized
  request) and get the result, with progress, bounded waits and one retry.

The app picks this path with ``[compute] backend = "ray"`` (``ui/compute.py``); pages
never know. Nothing here imports streamlit; ``ray`` is imported only when used.
"""
