"""geo3d's applications and command-line interface (installed as the ``geo3d_apps`` package).

Apps use only geo3d's public API; geo3d never imports them.
"""
