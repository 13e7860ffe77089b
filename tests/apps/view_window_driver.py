"""Drives the `geo3d view` window (run under Xvfb by tests/apps/test_view_window.py): opens it on a field,
types a query, switches preset, colour and render mode, grabs the 3D view to a PNG and quits.

Usage: python view_window_driver.py FIELD OUT_PNG
"""

import os
import sys
import threading
import time
from pathlib import Path

import open3d as o3d

from geo3d.structures.field import OpenVocabField
from geo3d_apps import view

field_path, out_png = Path(sys.argv[1]), sys.argv[2]
config = view.Config(field=field_path, query="car", text_encoder=sys.argv[3] if len(sys.argv) > 3 else None)
state = view.ViewState(OpenVocabField.load(field_path), config)
app = o3d.visualization.gui.Application.instance
app.initialize()
window = view._FieldWindow(o3d, state, (640, 480), None)


def drive() -> None:
    time.sleep(2)

    def step() -> None:
        window._on_query("road")
        print("STATUS", window.status.text, flush=True)
        window._set_preset("bev")
        window._on_color("relevance", 0)
        window._on_mode("cubes", 0)

    app.post_to_main_thread(window.window, step)
    time.sleep(2)

    def grab() -> None:
        def save(image) -> None:
            o3d.io.write_image(out_png, image)
            print("CAPTURED", flush=True)
            os._exit(0)

        window.widget.scene.scene.render_to_image(save)

    app.post_to_main_thread(window.window, grab)
    time.sleep(20)
    os._exit(3)


threading.Thread(target=drive, daemon=True).start()
app.run()
