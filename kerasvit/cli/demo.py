"""A Gradio page that classifies an uploaded image: top-5 classes, the inference time of that
prediction and the explanation overlay (attention rollout for ViTs, Grad-CAM for the CNN).

    KERAS_BACKEND=jax python -m kerasvit.demo runs/<run>                # http://127.0.0.1:7860
    python -m kerasvit.demo runs/<run> --host 0.0.0.0 --port 8080      # only when asked

Upload any PNG/JPEG/... or click one of the CIFAR-10 test images (one per class). The page
names the model, backend and run it serves, with the run's test accuracy. Bad uploads (not
an image, too small, too large) get a message in the page; the server keeps running.

This module parses and checks the flags, then serves kerasvit.serving.page, whose logic
(kerasvit.serving.classifier) has no Gradio in it.
"""

import os
import sys

from kerasvit import cli
from kerasvit.errors import UserError

PROG = "kerasvit.demo"
DEFAULT_HOST = "127.0.0.1"  # this machine only; other addresses only when asked with --host
DEFAULT_PORT = 7860
MAX_UPLOAD = "25mb"  # Gradio refuses larger files before they reach us.


def parse_args(argv=None):
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("model", metavar="RUN_OR_KERAS", help="run folder or .keras file")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default 127.0.0.1: this machine only; "
                             "0.0.0.0 opens the demo to the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT})")
    cli.add_unsafe_load_flag(parser)
    return parser.parse_args(argv)


def check_args(args):
    """Refuses bad input before the slow framework imports."""
    from kerasvit.runs import loading

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    if not args.host.strip():
        raise UserError("--host must not be empty")
    loading.check_model_file(args.model, args.unsafe_load)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("gradio is not installed; install the demo extra: "
                        "pip install -e '.[demo]'") from None


def main(argv=None):
    args = parse_args(argv)
    backend = cli.check_backend(PROG)
    # Gradio would otherwise phone home at start-up (analytics, version check).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        check_args(args)
        cli.import_tensorflow_quietly()
        from kerasvit.serving import classifier, page

        served = classifier.load_served_model(args.model, backend, args.unsafe_load)
        examples = classifier.gallery_examples()
    except UserError as error:  # bad flag, run or model: one line, no traceback
        cli.fail(PROG, str(error))
    classifier.warm_up(served)
    serve(page.build_page(served, examples), served, args.host, args.port)


def serve(page, served, host, port):
    try:
        page.queue().launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD,
                            prevent_thread_lock=True, quiet=True, show_error=True)
    except OSError as error:  # port taken, or an address this machine does not have
        cli.fail(PROG, f"cannot listen on {host}:{port} ({str(error).splitlines()[0]}); "
                       "choose another --port or --host")
    print(f"{PROG}: serving {served.name} from {served.source} on {served.backend} at "
          f"http://{host}:{port} (Ctrl-C to stop)", flush=True)
    page.block_thread()  # until Ctrl-C, which Gradio turns into a clean shutdown


if __name__ == "__main__":
    sys.exit(main())
