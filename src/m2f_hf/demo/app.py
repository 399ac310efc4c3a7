"""The Gradio page: layout and event handlers over `m2f_hf.demo.service` (which does all the computing).

`build_demo()` returns a `gr.Blocks` with its queue on; `m2f-demo` launches it locally, `demo/app.py` on a Space.
Handlers turn every expected failure (not an image, too large, a model that cannot be loaded, a bad option) into a
`gr.Error`, which the page shows as a message; the server goes on serving.
"""

import base64
import html
import json
import logging
import tempfile
import time
from pathlib import Path

from . import service
from .service import DemoInputError

logger = logging.getLogger(__name__)

TITLE = "Mask2Former segmentation (m2f_hf)"
DEFAULT_MODEL_NOTE = (
    "**The bundled default model knows only synthetic shapes**: circles, squares and triangles (things) on grass, "
    "water and sand textures (stuff), like the examples below. On a photo it still answers with those six classes. "
    "For real images type a checkpoint in the *Model* box: a local folder saved by m2f_hf or transformers, or a "
    "Hugging Face Hub id such as `facebook/mask2former-swin-tiny-coco-panoptic` (loaded once, then cached)."
)
IMAGE_HEIGHT = 360  # pixels on the page for the input and the overlay (small images are scaled up to it)
ERROR_SECONDS = 30  # how long an error message stays on the page (it can be closed earlier)
RUNNING_STATUS = "Segmenting..."
FAILED_STATUS = "**The request failed**: the message at the top right says why. Nothing was segmented."
MODEL_BOX_INFO = "empty: the bundled default model; or a local checkpoint folder, or a Hub id"


def require_gradio():
    """`gradio`, or an ImportError that says how to install the demo extra."""
    try:
        import gradio
    except ImportError as error:
        raise ImportError(
            'the m2f_hf web demo needs Gradio, from the "demo" extra: pip install "m2f_hf[demo]" '
            '(in a source checkout: pip install -e ".[demo]").'
        ) from error
    return gradio


class DemoApp:
    """The page's state shared by all visitors (model cache, download folders, limits) and its event handlers.

    Args:
        model: the model loaded at start and used when the model box is empty (None: the bundled default model).
        device: `auto`, `cpu` or `cuda`.
        max_pixels: the largest image (width x height) the page segments whole.
        max_pixels_windowed: the largest with sliding windows (when the library has them).
        max_models: how many models stay loaded.
        work_dir: where the PNG and JSON downloads are written (default: a new temporary folder).
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        device: str = "auto",
        max_pixels: int = service.DEFAULT_MAX_PIXELS,
        max_pixels_windowed: int = service.DEFAULT_MAX_PIXELS_WINDOWED,
        max_models: int = service.DEFAULT_MAX_MODELS,
        work_dir: str | Path | None = None,
    ):
        self.default_model = service.normalize_model_spec(model)
        self.max_pixels = max_pixels
        self.max_pixels_windowed = max_pixels_windowed
        self.models = service.ModelCache(device, max_models=max_models)
        self.folders = service.ResultFolders(work_dir or tempfile.mkdtemp(prefix="m2f-demo-"))
        self.controls = service.available_options()

    def preload(self):
        """Load the default model now, so that the first visitor does not wait and a bad `--model` fails at start."""
        return self.models.get(self.default_model)

    # ------------------------------------------------------------------------------------------------- handlers
    def segment(self, image, model_spec, task, threshold, alpha, *extra):
        """Submit: (overlay, table rows, PNG path, JSON path, status line, session state).

        `image` is the Image component's raw value (the handler runs with preprocess=False, so that an upload that
        is not an image reaches our checks and gets our message rather than a pre-processing traceback).
        """
        path, name = _upload_path(image)
        spec = service.normalize_model_spec(model_spec) or self.default_model
        options = service.make_options(task, threshold, **{c.name: c.convert(v) for c, v in zip(self.controls, extra)})
        if getattr(options, "sliding_window", False):
            picture = service.read_image(path, name=name, max_pixels=self.max_pixels_windowed, mode="sliding-window")
        else:
            picture = service.read_image(path, name=name, max_pixels=self.max_pixels)
        loaded = self.models.get(spec)
        start = time.perf_counter()
        result = service.segment(picture, name=name, loaded=loaded, options=options, alpha=float(alpha))
        total = time.perf_counter() - start
        png, document = self.folders.write(result, service.output_stem(name))
        state = {"image": str(path), "name": name, "overlay": str(png), "json": str(document)}
        return (
            result.overlay,
            service.table_rows(result.records),
            str(png),
            str(document),
            _status(result, total),
            state,
        )

    def select(self, state, row_value, row_index):
        """A click on a table row: (the image with that segment highlighted, status line)."""
        if not state:
            raise DemoInputError("segment an image first, then click a row of the table.")
        with open(state["json"]) as handle:
            records = json.load(handle)["segments"]
        if row_value:
            record = service.find_record(records, row_value[0])
        elif row_index is not None and 0 <= row_index < len(records):
            record = records[row_index]
        else:
            raise DemoInputError("click a row of the segments table.")
        picture = service.read_image(state["image"], name=state["name"], max_pixels=self.max_pixels_windowed)
        score = "" if record["score"] is None else f" {record['score']:.3f}"
        status = (
            f"Highlighted segment {record['id']}: **{html.escape(record['label'])}**{score}, {record['area']} "
            "pixels. *Show all segments* brings the overlay back."
        )
        return service.highlight(picture, record), status

    # ---------------------------------------------------------------------------------------------------- page
    def build(self):
        """The `gr.Blocks` page with its queue on."""
        gr = require_gradio()
        from ..resources import example_images

        with gr.Blocks(title=TITLE, analytics_enabled=False) as blocks:
            state = gr.State(None)
            gr.Markdown(f"# {TITLE}\nMask2Former universal image segmentation: panoptic, instance and semantic.")
            gr.Markdown(DEFAULT_MODEL_NOTE, elem_id="model-note")
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(
                        label="Image",
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "clipboard", "webcam"],
                        height=IMAGE_HEIGHT,
                        elem_id="input-image",
                    )
                    gr.Examples([[str(p)] for p in example_images()], inputs=[image], label="Bundled examples")
                    model = gr.Textbox(
                        label="Model", value=self.default_model or "", placeholder=MODEL_BOX_INFO, info=MODEL_BOX_INFO
                    )
                    task = gr.Radio(["panoptic", "instance", "semantic"], value="panoptic", label="Task")
                    threshold = gr.Slider(
                        0.0, 1.0, value=service.default_option_value("threshold"), step=0.05,
                        label="Score threshold", info="panoptic / instance: minimum segment score",
                    )  # fmt: skip
                    alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
                    extra = []
                    if self.controls:
                        with gr.Accordion("More options", open=False):
                            extra = [_control(gr, c) for c in self.controls]
                    submit = gr.Button("Segment", variant="primary", elem_id="submit")
                with gr.Column(scale=1):
                    overlay = gr.Image(
                        label="Segments", type="pil", format="png", interactive=False, height=IMAGE_HEIGHT,
                        elem_id="overlay",
                    )  # fmt: skip
                    status = gr.Markdown("Upload an image or pick an example, then press *Segment*.", elem_id="status")
                    table = gr.Dataframe(
                        headers=list(service.TABLE_HEADERS),
                        datatype=["number", "str", "number", "number"],
                        interactive=False,
                        label="Segments (click a row to highlight it)",
                        elem_id="segments",
                    )
                    show_all = gr.Button("Show all segments", size="sm")
                    with gr.Row():
                        png = gr.DownloadButton("Download PNG", elem_id="download-png")
                        document = gr.DownloadButton("Download JSON", elem_id="download-json")

            outputs = [overlay, table, png, document, status, state]
            # Clear the last result first: after a failed request the page must not show the previous image's segments.
            cleared = submit.click(_cleared, outputs=outputs, queue=False, api_visibility="private")
            run = cleared.then(
                _page_errors(self.segment),
                inputs=[image, model, task, threshold, alpha, *extra],
                outputs=outputs,
                preprocess=False,
                api_name="segment",
            )
            run.failure(lambda: FAILED_STATUS, outputs=[status], api_visibility="private")

            def on_select(state_value, evt: gr.SelectData):
                row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
                return _page_errors(self.select)(state_value, evt.row_value, row)

            table.select(on_select, inputs=[state], outputs=[overlay, status], api_visibility="private")
            show_all.click(
                lambda s: s["overlay"] if s else None,
                inputs=[state],
                outputs=[overlay],
                api_visibility="private",
            )
        return blocks


def build_demo(**kwargs):
    """The demo page (a `gr.Blocks`, queue on) with the default model already loaded; keyword arguments as
    [`DemoApp`], plus `max_queue` (requests waiting at most, default unbounded) and `concurrency` (requests
    segmented at once, default 1)."""
    max_queue = kwargs.pop("max_queue", None)
    concurrency = kwargs.pop("concurrency", 1)
    service.configure_server_memory()
    app = DemoApp(**kwargs)
    app.preload()
    blocks = app.build()
    blocks.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    blocks.m2f_app = app  # for tests and embedding
    return blocks


# ---------------------------------------------------------------------------------------------------- helpers
def _control(gr, control):
    value = service.default_option_value(control.name)
    if control.kind == "checkbox":
        return gr.Checkbox(value=bool(value), label=control.label, info=control.info)
    if control.kind == "slider":
        return gr.Slider(
            control.minimum, control.maximum, value=value, step=control.step, label=control.label, info=control.info
        )
    if control.kind == "number":
        return gr.Number(value=value, label=control.label, info=control.info)
    raise ValueError(f"OptionControl.kind must be checkbox, slider or number; got {control.kind!r}.")


def _upload_path(payload) -> tuple[Path, str]:
    """(file path, name shown to the user) of the Image component's raw value (an uploaded file's data)."""
    if not payload:
        raise DemoInputError("no image: upload one, paste one, take one with the webcam, or pick an example.")
    if isinstance(payload, str | Path):
        return Path(payload), Path(payload).name
    path, url = payload.get("path"), payload.get("url") or ""
    name = payload.get("orig_name") or (Path(path).name if path else "image")
    if path:
        return Path(path), name
    if url.startswith("data:"):  # an inline image (some webcam and clipboard paths send one)
        header, _, data = url.partition(",")
        target = Path(tempfile.mkdtemp(prefix="m2f-demo-upload-")) / "image"
        target.write_bytes(base64.b64decode(data) if ";base64" in header else data.encode())
        return target, name
    raise DemoInputError("the image upload carried no file; upload it again.")


def _cleared():
    return None, [], None, None, RUNNING_STATUS, None


def _status(result, total: float) -> str:
    count = len(result.records)
    doc = result.document
    line = (
        f"**{count} segment{'s' if count != 1 else ''}** ({doc['task']}) on {doc['width']}x{doc['height']} pixels; "
        f"inference {result.seconds:.2f} s (model and post-processing), {total:.2f} s with drawing. "
        f"Model: {html.escape(doc['model'])}."
    )
    if result.is_default_model:
        line += " This model knows only synthetic shapes."
    return line


def _page_errors(handler):
    """`handler` with expected failures shown on the page as `gr.Error` (message HTML-escaped)."""
    import gradio as gr

    from ..inference.loading import ModelLoadError

    def wrapped(*args):
        try:
            return handler(*args)
        except (DemoInputError, ModelLoadError) as error:
            raise gr.Error(html.escape(str(error)), duration=ERROR_SECONDS, print_exception=False) from error
        except MemoryError as error:  # also the shared path's "too large for plain inference" (its message says so)
            message = str(error) or "the server ran out of memory on this image; try a smaller one."
            raise gr.Error(html.escape(message), duration=ERROR_SECONDS) from error
        except Exception as error:  # unexpected: the log gets the traceback, the page a one-line reason
            logger.exception("m2f_hf demo: request failed")
            raise gr.Error(
                html.escape(f"the request failed: {type(error).__name__}: {error}"), duration=ERROR_SECONDS
            ) from error
        finally:
            service.release_memory()

    wrapped.__name__ = handler.__name__
    return wrapped
