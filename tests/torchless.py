"""Makes `import torch` / `import timm` fail in a subprocess, as on an edge device without them.

Prepend TORCH_BLOCKER to the code a test runs with `python -c`.
"""
import textwrap

TORCH_BLOCKER = textwrap.dedent("""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('torch', 'timm', 'torchvision'):
                raise ImportError(f'{name} is blocked for this test')
            return None
    sys.meta_path.insert(0, _Block())
""")
