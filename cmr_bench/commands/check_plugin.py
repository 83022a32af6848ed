"""`cmr-bench check-plugin NAME`: run the conformance checks against any registered plugin."""

from __future__ import annotations

ORDER = 55


def register(sub) -> None:
    p = sub.add_parser("check-plugin", help="run the conformance checks against a method plugin")
    p.add_argument("name", help="a registered method name, or the path of a .py file defining Method subclasses")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto: where the checks fit and encode")
    p.set_defaults(handler=cmd_check)


def cmd_check(args) -> int:
    from cmr_bench.conformance import run_checks
    from cmr_bench.registry import get_method, method_source
    from cmr_bench.seeding import resolve_device

    device = resolve_device(args.device)
    if args.name.endswith(".py") or "/" in args.name:
        classes = [(cls.name or cls.__name__, cls, args.name) for cls in classes_in_file(args.name)]
    else:
        classes = [(args.name, get_method(args.name), method_source(args.name))]
    failed_any = False
    for name, cls, source in classes:
        print(f"{name} ({source})")
        results = run_checks(cls, device=device)
        for r in results:
            print(f"  {'PASS' if r.ok else 'FAIL'}  {r.name}" + (f": {r.detail}" if r.detail else ""))
        failed = [r for r in results if not r.ok]
        print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
        failed_any = failed_any or bool(failed)
    return 1 if failed_any else 0


def classes_in_file(path: str) -> list:
    """The Method subclasses a plugin file defines (not those it imports), before it is installed."""
    import importlib.util
    import inspect
    import sys
    from pathlib import Path

    from cmr_bench.errors import CmrBenchError
    from cmr_bench.plugin import Method

    file = Path(path)
    if not file.is_file():
        raise CmrBenchError(f"check-plugin: no such file {path}")
    from cmr_bench.safe_io import MAX_TEXT, check_regular

    check_regular(file.resolve(), "check-plugin: plugin file", MAX_TEXT)  # not a FIFO or a device
    if file.suffix != ".py":
        raise CmrBenchError(f"check-plugin: {path} is not a Python file (.py) nor a registered method name")
    module_name = f"_cmr_bench_check_{file.stem}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise CmrBenchError(f"check-plugin: {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.parent.resolve()))  # the plugin's own sibling modules
    try:
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit included: a plugin that exits at import is a broken plugin
        raise CmrBenchError(f"check-plugin: {path} does not import: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    finally:
        sys.path.remove(str(file.parent.resolve()))
    found = [c for _, c in inspect.getmembers(module, inspect.isclass)
             if issubclass(c, Method) and c.__module__ == module_name and not inspect.isabstract(c) and getattr(c, "name", "")]
    if not found:
        raise CmrBenchError(f"check-plugin: {path} defines no Method subclass with a name")
    return found
