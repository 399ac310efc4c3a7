"""`torch.export` of the model with a dynamic batch, height and width.

    from m2f_hf.export.torch_program import export_program

    program = export_program(model)  # a torch.export.ExportedProgram
    outputs = program.module()(pixel_values)  # any batch, any height and width that are multiples of 32 (>= 64)

Height and width are declared as 32 x a symbolic block count, so the program knows that every feature level
divides evenly (the sizes of all levels and the attention-mask resizes stay symbolic instead of being fixed to the
example's). Sizes of one block (32 pixels) are excluded: torch.export specialises dimensions of size 1, and the 1/32
level of a 32-pixel side has one row.
"""

from __future__ import annotations

import torch

# the stride of the coarsest feature level: input sides are multiples of it
SIZE_MULTIPLE = 32
MIN_BLOCKS = 2


def dynamic_shapes(*, max_batch: int = 64, max_size: int = 4096) -> dict:
    """The `dynamic_shapes` argument of `torch.export.export(model, (pixel_values,), ...)`: batch 1..`max_batch`,
    height and width multiples of 32 from 64 to `max_size`."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}.")
    if max_size < SIZE_MULTIPLE * MIN_BLOCKS:
        raise ValueError(f"max_size must be at least {SIZE_MULTIPLE * MIN_BLOCKS}, got {max_size}.")
    Dim = torch.export.Dim
    batch = Dim("batch", min=1, max=max_batch)
    height = Dim("height_blocks", min=MIN_BLOCKS, max=max_size // SIZE_MULTIPLE)
    width = Dim("width_blocks", min=MIN_BLOCKS, max=max_size // SIZE_MULTIPLE)
    return {"pixel_values": {0: batch, 2: SIZE_MULTIPLE * height, 3: SIZE_MULTIPLE * width}}


def check_input_size(pixel_values: torch.Tensor) -> None:
    """A clear error for an input the exported program cannot take (instead of torch's guard message)."""
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must be (batch, channels, height, width), got shape {tuple(pixel_values.shape)}."
        )
    height, width = pixel_values.shape[-2:]
    minimum = SIZE_MULTIPLE * MIN_BLOCKS
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or height < minimum or width < minimum:
        raise ValueError(
            f"pixel_values of size {height}x{width}: the exported program takes heights and widths that are "
            f"multiples of {SIZE_MULTIPLE}, at least {minimum} (pad the image, as the image processor does)."
        )


@torch.no_grad()
def export_program(
    model: torch.nn.Module,
    example: torch.Tensor | None = None,
    *,
    max_batch: int = 64,
    max_size: int = 4096,
    strict: bool = False,
) -> torch.export.ExportedProgram:
    """Export `model` (in evaluation mode, without autograd) with a dynamic batch, height and width.

    `example` defaults to a zero batch of 2 images of 64 x 96 in the model's dtype and on its device; it only has to
    be a valid input (its sizes are not baked in; a batch of 1 is doubled, since torch.export would fix a size-1
    batch).

    Tested with ResNet backbones. transformers' Swin pads every stage to whole windows; exporting it with dynamic
    sizes takes minutes and specialises the window counts of the example (its program then fails at other sizes).
    """
    model.eval()
    parameter = next(model.parameters())
    if example is None:
        channels = getattr(model.config, "num_channels", 3)
        example = torch.zeros(2, channels, 64, 96, dtype=parameter.dtype, device=parameter.device)
    check_input_size(example)
    if example.shape[0] == 1:  # torch.export specialises a dimension that is 1 in the example
        example = example.expand(2, *example.shape[1:])
    if example.shape[0] > max_batch or max(example.shape[-2:]) > max_size:
        raise ValueError(
            f"example of shape {tuple(example.shape)} exceeds max_batch={max_batch} / max_size={max_size}."
        )
    return torch.export.export(
        model, (example,), dynamic_shapes=dynamic_shapes(max_batch=max_batch, max_size=max_size), strict=strict
    )
