"""The Gradio page of ``stargan serve`` and the server that runs it.

Every handler turns a bad request into a message in the page's status line and leaves the server
serving. Uploads arrive as the temporary files Gradio writes; examples are chosen by their label from
a list made when the server starts, so no path sent by a browser is ever opened.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from stargan.data.images import DataError, load_rgb
from stargan.serve.model import MAX_STYLES, RequestError, ServedModel
from stargan.serve.uploads import MAX_UPLOAD_BYTES, UploadError, read_upload

log = logging.getLogger(__name__)
QUEUE_SIZE = 16  # requests waiting beyond this are told the server is busy

# No telemetry, no share links, no version checks: the page works without internet.
_OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SHARE": "False", "GRADIO_SSR_MODE": "False",
                "GRADIO_MCP_SERVER": "False", "GRADIO_RUN_HISTORY": "False", "HF_HUB_OFFLINE": "1"}


def import_gradio() -> Any:
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import gradio
    except ImportError as error:
        raise ImportError("`stargan serve` needs Gradio: pip install 'stargan[serve]' (or pip install gradio)") \
            from error
    return gradio


def problem(text: str) -> str:
    return f"⚠️ {text}"


def markdown_literal(text: str) -> str:
    """``text`` with Markdown's special characters escaped, so it shows as typed."""
    return re.sub(r"([\\`*_{}\[\]()<>#+|!~-])", r"\\\1", text)


def enlarged(image: Image.Image, side: int = 160) -> Image.Image:
    """Small images blown up with visible pixels, so a 32 px input is not a speck on the page."""
    scale = side // max(image.size)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


class Handlers:
    """What the page's events do, with plain Python values in and out (tested without a browser)."""

    def __init__(self, model: ServedModel, out_dir: Path):
        self.model = model
        self.out_dir = out_dir
        self.examples = {example.label: example.path for example in model.examples}

    def upload(self, file: str | None, what: str) -> tuple[Image.Image | None, Image.Image | None, str]:
        """(decoded image for the session, preview, status) for a file Gradio received."""
        if not file:
            return None, None, ""
        name = markdown_literal(Path(file).name)  # the status line is Markdown; a file name is not
        try:
            upload = read_upload(file, name=name)
        except UploadError as error:
            return None, None, problem(str(error))
        except Exception as error:  # a decoder bug must not take the page down
            log.exception("unexpected failure reading an upload")
            return None, None, problem(f"{name} could not be read ({type(error).__name__}); try another file")
        notes = "; ".join(upload.notes)
        size = "x".join(map(str, upload.image.size))
        return upload.image, enlarged(upload.image), f"{what}: {name} ({size})" + (f". {notes}" if notes else "")

    def example(self, label: str | None, what: str) -> tuple[Image.Image | None, Image.Image | None, str]:
        if not label:
            return None, None, ""
        if label not in self.examples:
            return None, None, problem(f"unknown example {label!r}")
        try:
            image = load_rgb(self.examples[label])
        except DataError as error:
            return None, None, problem(str(error))
        return image, enlarged(image), f"{what}: example {label}"

    def translate(self, source: Image.Image | None, reference: Image.Image | None, domain: str | None,
                  attributes: list[str] | None, mode: str, num_styles: float, seed: float, psi: float
                  ) -> tuple[list[tuple[Image.Image, str]] | None, str]:
        """(gallery of (image, caption), status)."""
        if source is None:
            return None, problem("upload a source image (or pick an example) first")
        if mode == "reference" and reference is None:
            return None, problem("reference mode: upload reference image A (or pick an example) first")
        try:
            images = self.model.translate(
                source, domain or "", num_styles=int(num_styles), seed=int(seed), psi=float(psi),
                reference=reference if mode == "reference" else None, attributes=tuple(attributes or ()))
        except RequestError as error:
            return None, problem(str(error))
        except Exception as error:
            log.exception("translation failed")
            return None, problem(f"translation failed: {type(error).__name__}: {error}")
        target = domain if self.model.domains else "+".join(attributes or ()) or "no attributes"
        if self.model.arch == "v1":
            captions = [target]
        elif mode == "reference":
            captions = ["reference style"]
        else:
            captions = [f"style {k}, seed {int(seed)}" for k in range(len(images))]
        size = images[0].size
        return list(zip(images, captions)), f"{len(images)} image(s) of {size[0]}x{size[1]} px, target {target}"

    def interpolate(self, source: Image.Image | None, ref_a: Image.Image | None, ref_b: Image.Image | None,
                    domain: str | None) -> tuple[str | None, str]:
        """(path of a GIF, status)."""
        if source is None or ref_a is None or ref_b is None:
            return None, problem("the interpolation GIF needs a source and two references (A and B)")
        path = self.out_dir / f"interpolation-{uuid.uuid4().hex[:12]}.gif"
        try:
            self.model.interpolate(source, (ref_a, ref_b), domain or "", path)
        except RequestError as error:
            return None, problem(str(error))
        except Exception as error:
            log.exception("interpolation failed")
            return None, problem(f"interpolation failed: {type(error).__name__}: {error}")
        return str(path), f"style interpolation A -> B -> A in {domain}"


def build_page(model: ServedModel, out_dir: Path) -> Any:
    """The ``gradio.Blocks`` page (not started)."""
    gr = import_gradio()
    handlers = Handlers(model, out_dir)
    v2 = model.arch == "v2"
    labels = [example.label for example in model.examples]
    shown = {"interactive": False, "type": "pil", "format": "png", "buttons": ["fullscreen"]}  # no share
    with gr.Blocks(title=f"stargan · {model.run_dir.name}", analytics_enabled=False) as page:
        gr.Markdown(f"## StarGAN {model.arch} · {model.run_dir.name}")
        with gr.Accordion("About this model", open=True):
            gr.Markdown(model.describe(), elem_id="about")
        source = gr.State(None)
        ref_a = gr.State(None)
        ref_b = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    source_file = gr.File(label="Source image", elem_id="source-file", scale=3)
                    source_preview = gr.Image(label="Source", elem_id="source-preview", height=160, scale=2, **shown)
                source_example = gr.Dropdown(labels, value=None, label="…or pick an example", visible=bool(labels),
                                             elem_id="source-example")
                if model.domains:
                    domain = gr.Radio(list(model.domains), value=model.domains[-1], label="Target domain",
                                      elem_id="domain")
                    attributes = gr.CheckboxGroup([], visible=False)
                else:
                    domain = gr.Radio([], visible=False)
                    attributes = gr.CheckboxGroup(list(model.attributes), label="Attributes of the output",
                                                  elem_id="attributes")
                mode = gr.Radio(["latent", "reference"], value="latent", label="Style", visible=v2,
                                elem_id="mode")
                with gr.Group(visible=v2) as latent_group:
                    num_styles = gr.Slider(1, MAX_STYLES, value=4, step=1, label="Number of styles",
                                           elem_id="num-styles")
                    seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                    psi = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="psi (1: full diversity, 0: mean style)",
                                    elem_id="psi")
                with gr.Group(visible=False) as reference_group:
                    with gr.Row():
                        ref_a_file = gr.File(label="Reference image A", elem_id="ref-a-file")
                        ref_a_preview = gr.Image(label="A", height=120, **shown)
                    ref_a_example = gr.Dropdown(labels, value=None, label="…or an example for A",
                                                visible=bool(labels), elem_id="ref-a-example")
                    with gr.Row():
                        ref_b_file = gr.File(label="Reference image B (for the GIF)", elem_id="ref-b-file")
                        ref_b_preview = gr.Image(label="B", height=120, **shown)
                    ref_b_example = gr.Dropdown(labels, value=None, label="…or an example for B",
                                                visible=bool(labels), elem_id="ref-b-example")
                translate = gr.Button("Translate", variant="primary", elem_id="translate")
                gif_button = gr.Button("Style interpolation GIF (A → B → A)", visible=model.interpolates,
                                       elem_id="interpolate")
            with gr.Column(scale=1):
                status = gr.Markdown("", elem_id="status")
                gallery = gr.Gallery(label="Outputs", format="png", columns=2, height="auto", object_fit="contain",
                                     buttons=["download"], elem_id="outputs")
                gif = gr.Image(label="Style interpolation", type="filepath", interactive=False,
                               visible=model.interpolates,
                               buttons=["download", "fullscreen"],
                               elem_id="gif")

        for file, example, state, preview, what in (
                (source_file, source_example, source, source_preview, "source"),
                (ref_a_file, ref_a_example, ref_a, ref_a_preview, "reference A"),
                (ref_b_file, ref_b_example, ref_b, ref_b_preview, "reference B")):
            file.change(lambda f, what=what: handlers.upload(f, what), file, [state, preview, status])
            example.change(lambda label, what=what: handlers.example(label, what), example,
                           [state, preview, status])
        mode.change(lambda m: (gr.update(visible=m == "latent"), gr.update(visible=m == "reference")), mode,
                    [latent_group, reference_group])
        translate.click(handlers.translate, [source, ref_a, domain, attributes, mode, num_styles, seed, psi],
                        [gallery, status], concurrency_id="model")
        gif_button.click(handlers.interpolate, [source, ref_a, ref_b, domain], [gif, status],
                         concurrency_id="model")
    return page


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          block: bool = True, backend: str = "torch", threads: int | None = None) -> Any:
    """Load the model once and serve its page at ``http://HOST:PORT``; one request computes at a time.
    ``backend="onnx"``: ``path`` is a folder written by `stargan export`, run by ONNX Runtime with
    ``threads`` (see :class:`ServedModel`)."""
    gr = import_gradio()
    warnings.filterwarnings("ignore", category=ResourceWarning)  # asyncio loops of the web server's threads
    model = ServedModel(path, device=device, backend=backend, threads=threads)
    out_dir = Path(tempfile.mkdtemp(prefix="stargan-serve-"))
    page = build_page(model, out_dir)
    page.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    print(f"serving {model.checkpoint} (StarGAN {model.arch}, {model.device}) at http://{host}:{port}",
          flush=True)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts
    css = "#outputs img, #source-preview img, #gif img { image-rendering: pixelated; }"  # small models: crisp
    try:
        page.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=False,
                    max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False, pwa=False, mcp_server=False,
                    enable_monitoring=False, footer_links=[], quiet=True, theme=theme, css=css,
                    allowed_paths=[str(out_dir)], prevent_thread_lock=not block)
    except OSError as error:  # Gradio's words for a taken port name its own settings, not our options
        raise ValueError(f"cannot serve at {host}:{port}: {error.strerror or 'the port is in use'}; "
                         "choose another with --port (or stop what uses it)") from error
    return page
