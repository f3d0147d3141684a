"""Run a module on fake CUDA tensors to prove it never synchronises with the host.

Under :class:`torch._subclasses.fake_tensor.FakeTensorMode` tensors carry shapes,
dtypes and devices but no data, so every operation that would copy a device value
to the host (``.item()``, ``bool(t)``, ``.tolist()``, ``nonzero``, data-dependent
shapes) raises ``DataDependentOutputException`` instead of running. A forward pass
that completes on fake CUDA tensors therefore does not synchronise on a real GPU,
and the check needs no GPU. (The autograd engine needs a real CUDA context, so
backward passes are checked on the CPU with :class:`SyncDetector` instead.)
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode

#: Operators that copy a device value to the host (a synchronisation on CUDA).
HOST_SYNC_OPERATORS = (
    'aten._local_scalar_dense',
    'aten.nonzero',
    'aten.is_nonzero',
    'aten.masked_select',
    'aten.unique',
    'aten._unique',
    'aten.equal',
    'aten.allclose',
)


class FakeCuda:
    """Fake CUDA copies of a module's state and of tensors, inside a fake mode."""

    def __init__(self, mode: FakeTensorMode, module: nn.Module) -> None:
        self.mode = mode
        self.module = module
        # detach outside the fake mode: a real parameter may not enter it
        self._real = {n: p.detach() for n, p in module.named_parameters()}
        self._requires_grad = {n: p.requires_grad for n, p in module.named_parameters()}
        self._real.update(dict(module.named_buffers()))
        self.state: dict[str, Tensor] = {}

    def tensor(self, tensor: Tensor) -> Tensor:
        """A fake CUDA tensor with the shape and dtype of a real CPU ``tensor``."""
        return self.mode.from_tensor(tensor).to('cuda')

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the module's ``forward`` with its state on fake CUDA."""
        return self.method('forward')(*args, **kwargs)

    def method(self, name: str) -> Callable[..., Any]:
        """The module's method ``name``, run with its state on fake CUDA."""
        if not self.state:
            self.state = {
                f'module.{key}': self.tensor(t).requires_grad_(
                    self._requires_grad.get(key, False)
                )
                for key, t in self._real.items()
            }
        wrapper = _Method(self.module, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return functional_call(wrapper, self.state, args, kwargs)

        return call


class _Method(nn.Module):
    """Calls one method of a module, so that ``functional_call`` can run it."""

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__()
        self.module = module
        self.name = name

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.name)(*args, **kwargs)


@contextmanager
def fake_cuda(module: nn.Module) -> Iterator[FakeCuda]:
    """Enter a fake-tensor mode in which ``module`` runs on fake CUDA tensors.

    Tensors created inside (``torch.randn(..., device='cuda')``) are fake; a real
    tensor used inside raises, so nothing runs on real data by accident.
    """
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    fake = FakeCuda(mode, module)  # reads the real state before the mode starts
    with mode:
        yield fake


class SyncDetector(TorchDispatchMode):
    """Record every operator that would copy a device value to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        name = str(func)
        if name.startswith(HOST_SYNC_OPERATORS):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@contextmanager
def cuda_autocast(dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """CUDA autocast without a GPU (``torch.autocast('cuda')`` switches itself off).

    Sets the dispatcher's CUDA autocast state directly, which is what
    ``torch.autocast`` does on a machine with a GPU; restored on exit.
    """
    enabled = torch.is_autocast_enabled('cuda')
    previous = torch.get_autocast_dtype('cuda')
    torch.set_autocast_enabled('cuda', True)
    torch.set_autocast_dtype('cuda', dtype)
    try:
        yield
    finally:
        torch.set_autocast_enabled('cuda', enabled)
        torch.set_autocast_dtype('cuda', previous)
