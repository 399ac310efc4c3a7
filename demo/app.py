"""The m2f_hf web demo as a Hugging Face Space (Gradio SDK): the Space runs this file.

Locally, after `pip install -e ".[demo]"` at the repository root: `python demo/app.py` serves the same page as
`m2f-demo` on http://127.0.0.1:7860. `python demo/prepare_space.py OUT --model OWNER/NAME` makes the folder to
upload as a Space (docs/demo.md). The page's default model is `$M2F_DEMO_MODEL`, else the first of `models:` in the
README.md next to this file, else the bundled one (which knows only synthetic shapes).
"""

from pathlib import Path

from m2f_hf.demo import build_demo
from m2f_hf.demo.service import DEFAULT_MAX_FILE_SIZE
from m2f_hf.demo.space import space_default_model

demo = build_demo(model=space_default_model(Path(__file__).parent))

if __name__ == "__main__":
    demo.launch(max_file_size=DEFAULT_MAX_FILE_SIZE)  # a Space sets the address and port through GRADIO_SERVER_*
