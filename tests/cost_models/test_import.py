import subprocess
import sys


def test_import_does_not_pull_torch_or_heavy_deps():
    code = ("import sys, cost_models; "
            "print(sorted(m for m in ('torch', 'scipy', 'pandas', 'matplotlib', 'optimizer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_public_names_are_exported():
    import cost_models

    for name in ("Scenario", "PriceBook", "CostModel", "CostBreakdown", "LineItem", "ModelFigures",
                 "break_even", "sensitivity", "uncertainty", "tornado_plot"):
        assert name in cost_models.__all__
        assert hasattr(cost_models, name)
