"""Makes `import torch` / `import timm` fail in a subprocess, as on an edge device without them.

Prepend TORCH_BLOCKER (or `blocker(...)` for other packages) to the code a test runs with `python -c`.
"""
import textwrap


def blocker(*packages: str) -> str:
    """Code that makes importing any of `packages` (top-level names) raise ImportError."""
    return textwrap.dedent(f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {tuple(packages)!r}:
                    raise ImportError(f'{{name}} is blocked for this test')
                return None
        sys.meta_path.insert(0, _Block())
    """)


TORCH_BLOCKER = blocker("torch", "timm", "torchvision")
