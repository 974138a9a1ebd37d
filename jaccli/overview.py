"""`jaccli --help`: the commands and the app's own options, drawn without building the commands.

Typer builds every command's options and loads its Rich help formatter (with a Markdown parser)
before it prints the top-level help: about 100 ms for a list of eight lines. The same panels
are drawn here from the summaries the commands themselves use (`COMMANDS`), so `jaccli --help`
costs little more than importing Rich.
"""

from __future__ import annotations

DESCRIPTION = (
    "Jacobians and their determinants, vector-Jacobian and Jacobian-vector products, Hessians "
    "and Hessian-vector products of functions, by PyTorch autograd."
)
COMMANDS = {
    "jacobian": "Compute y = f(x) and its Jacobian J.",
    "det": "Compute J and det J of a square Jacobian.",
    "vjp": "Compute the vector-Jacobian product vᵀ·J.",
    "jvp": "Compute the Jacobian-vector product J·v.",
    "hessian": "Compute the Hessian H = ∂²y/∂a∂b.",
    "hvp": "Compute the Hessian-vector product H·v.",
    "check": "Gradient-check a function in float64.",
    "presets": "List the preset functions.",
}
"""Each command's one-line summary, as `jaccli --help` lists it and its own help begins."""
DETAILS = {
    "jacobian": ("J.shape == y.shape + x.shape, and J[i…, j…] = ∂y[i…]/∂x[j…].",),
    "det": (
        "With det J come its sign, log|det J| (no overflow) and the trace (the divergence). J "
        "must be square once flattened (y.numel() == x.numel()); with several --wrt, the joint J.",
    ),
    "vjp": ("It is the x.grad that y.backward(v) leaves.",),
    "jvp": (
        "By forward mode: how y changes along v. With several --wrt inputs the products add up, "
        "J·v = Σₖ Jₖ·vₖ, as torch.func.jvp has it.",
    ),
    "hessian": (
        "For each output and every pair of --wrt inputs, H.shape == y.shape + a.shape + "
        "b.shape: the Jacobian of the gradient. --strategy fwd is forward-over-reverse (jacfwd "
        "of jacrev), rev and loop reverse-over-reverse.",
    ),
    "hvp": (
        "Of a scalar output, without forming H: the JVP of the gradient (forward-over-reverse), "
        "in the memory of a few gradients.",
    ),
    "check": (
        "AD against the other mode and finite differences. Exits 0 when every comparison passes "
        "and 1 when one fails, so it can run in CI.",
    ),
    "presets": ("Name, formula, inputs with their default shapes, and whether J is square.",),
}
"""The paragraphs of each command's help after its summary (plain text, no markup)."""
EXAMPLES = {
    "jacobian": (
        "jaccli jacobian --fn expsum --shape 2x3",
        'jaccli jacobian --expr "x.sin() * a" --shape x=3 --shape a=3 --wrt x --json',
        "jaccli jacobian --fn model.py:f --shape 64x16 --view heatmap --out j.png",
    ),
    "det": (
        "jaccli det --fn spherical --value 'x=[2, 0.5, 1]' --dtype float64",
        "jaccli det --fn planar_flow --shape x=4096x16 --batched",
    ),
    "vjp": (
        "jaccli vjp --fn matmul --wrt a",
        "jaccli vjp --fn matmul --cotangent '[[1, 0], [0, 0]]' --json",
    ),
    "jvp": (
        "jaccli jvp --fn expsum --tangent ones",
        "jaccli jvp --fn polar --tangent '[1, 0]' --check",
    ),
    "hessian": (
        "jaccli hessian --fn logsumexp --shape 4",
        'jaccli hessian --expr "(x ** 4).sum()" --shape 50 --view sparsity',
    ),
    "hvp": (
        "jaccli hvp --fn logsumexp --vector ones",
        'jaccli hvp --expr "(x.sin() * x).sum()" --shape 1000000 --out hv.npy',
    ),
    "check": ("jaccli check --fn expsum", "jaccli check --fn model.py:f --shape 8x4 --wrt x"),
    "presets": ("jaccli presets", "jaccli presets --json"),
}
"""The examples each command's help ends with (the tests run every one)."""
VERSION_HELP = "Print the versions of jaccli, torch and Python, and exit."
OPTIONS = {
    "--version": VERSION_HELP,
    "--install-completion": "Install completion for the current shell.",
    "--show-completion": "Show completion for the current shell, to copy it or customize "
    "the installation.",
    "--help  -h": "Show this message and exit.",
}


def print_overview() -> None:
    """The usage line, what jaccli computes, its options and its commands, in Typer's panels."""
    from rich import box
    from rich.console import Console, Group
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    def panel(title: str, rows: dict[str, str], style: str) -> Panel:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=False)
        table.add_column(style=style, no_wrap=True)
        table.add_column(ratio=1)
        for name, text in rows.items():
            table.add_row(name, text)
        return Panel(table, title=title, title_align="left", border_style="dim", box=box.ROUNDED)

    console = Console(highlight=False)
    console.print(
        Group(
            Padding(
                Text.assemble(
                    ("Usage: ", "yellow"), ("jaccli [OPTIONS] COMMAND [ARGS]...", "bold")
                ),
                1,
            ),
            Padding(Text(DESCRIPTION), (0, 1, 1, 1)),
            panel("Options", OPTIONS, "bold cyan"),
            panel("Commands", COMMANDS, "bold cyan"),
            Text(""),
        )
    )
