"""Configuration from flags, `K8PY_*` environment variables and a YAML file, as k3s does it.

Precedence is flag > environment > file > default. Click already ranks a command line over an
option's `envvar` over the context's `default_map` over the option's default, so the file is
loaded into `default_map` before the command's context is made (`ConfiguredCommand`).

The file is `--config`/`-c`, else `$K8PY_CONFIG`, else `/etc/k8py/config.yaml` if it exists.
Its keys are the long flag names (`data-dir: /srv/k8py`); a list gives a repeatable flag its
values. An unknown key, a value of the wrong shape, or a file that is not a YAML mapping is a
usage error naming the file and the key.

The value types here (CIDR, IP, port range, file mode, DNS name, duration) reject bad values with a message that
names the flag.
"""

from __future__ import annotations

import ipaddress
import os
import re

import click
import yaml

DEFAULT_CONFIG_FILE = "/etc/k8py/config.yaml"
ENV_PREFIX = "K8PY_"

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")


def option(*decls: str, **attrs):
    """A click option whose environment variable is K8PY_<LONG NAME>."""
    long_name = next(d for d in decls if d.startswith("--")).split("/")[0][2:]
    attrs.setdefault("envvar", ENV_PREFIX + long_name.upper().replace("-", "_"))
    attrs.setdefault("show_envvar", True)
    return click.option(*decls, **attrs)


class CIDR(click.ParamType):
    name = "cidr"

    def convert(self, value, param, ctx):
        if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            return value
        try:
            return ipaddress.ip_network(str(value), strict=True)
        except ValueError as exc:
            self.fail(f"{value!r} is not a network in CIDR notation ({exc})", param, ctx)


class IPAddress(click.ParamType):
    name = "ip"

    def convert(self, value, param, ctx):
        try:
            return ipaddress.ip_address(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an IP address", param, ctx)


class PortRange(click.ParamType):
    """Two ports joined by a dash, both included: `30000-32767` (upstream's and k3s's form
    of --service-node-port-range)."""

    name = "range"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", str(value))
        low, high = (int(match[1]), int(match[2])) if match else (0, 0)
        if not match or not 1 <= low <= high <= 65535:
            self.fail(f"{value!r} is not a port range like 30000-32767 (ports 1-65535, "
                      "the first not above the last)", param, ctx)
        return low, high


class FileMode(click.ParamType):
    """An octal file mode such as 0600 or 644."""

    name = "mode"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML reads an unquoted 0644 as the number 420: take it as that mode. An unquoted
            # 644 is the decimal 644, which no mode is.
            if 0 <= value <= 0o777:
                return value
            self.fail(f"{value!r} is not a file mode: write it quoted, like '0644'", param, ctx)
        text = str(value)
        if not re.fullmatch(r"0?[0-7]{3}", text):
            self.fail(f"{value!r} is not an octal file mode like 0600", param, ctx)
        return int(text, 8)


class DNSName(click.ParamType):
    """A DNS-1123 subdomain: what Kubernetes accepts as a node name or cluster domain."""

    name = "name"

    def convert(self, value, param, ctx):
        text = str(value)
        if len(text) > 253 or not DNS1123_SUBDOMAIN.match(text):
            self.fail(
                f"{text!r} is not a valid DNS-1123 name (lowercase letters, digits, '-' and '.',"
                " starting and ending with a letter or digit)",
                param,
                ctx,
            )
        return text


class Duration(click.ParamType):
    """A Go duration (`15s`, `5m0s`, `1m30s`, `500ms`; a bare number is seconds), as
    upstream's duration flags take it; the value is seconds."""

    name = "duration"
    UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        text = str(value).strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            self.fail(f"{value!r} is not a duration like 15s, 5m0s or 1m30s", param, ctx)
        return sum(float(n) * self.UNITS[u] for n, u in parts)


def load_config_file(path: str, command: click.Command) -> dict:
    """The file's settings as a default_map for command; usage errors name what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise click.UsageError(f"config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise click.UsageError(f"config file {path}: invalid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise click.UsageError(f"config file {path}: expected a mapping of flag names to values")
    by_flag = {
        opt[2:]: param
        for param in command.params
        if isinstance(param, click.Option)
        for opt in param.opts
        if opt.startswith("--")
    }
    defaults = {}
    for key, value in data.items():
        param = by_flag.get(str(key))
        if param is None or param.name == "config":
            raise click.UsageError(f"config file {path}: unknown key {key!r}")
        if param.multiple:
            value = value if isinstance(value, list) else [value]
        elif isinstance(value, (list, dict)):
            raise click.UsageError(f"config file {path}: {key!r} takes a single value")
        if param.is_flag and not isinstance(value, bool):
            raise click.UsageError(f"config file {path}: {key!r} takes true or false")
        defaults[param.name] = value
    return defaults


def _config_path_from_args(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("--config", "-c") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


class ConfiguredCommand(click.Command):
    """A command whose defaults come from the config file (see the module docstring)."""

    def make_context(self, info_name, args, parent=None, **extra):
        path = _config_path_from_args(args) or os.environ.get(ENV_PREFIX + "CONFIG")
        if path is None and os.path.exists(DEFAULT_CONFIG_FILE):
            path = DEFAULT_CONFIG_FILE
        if path:
            extra["default_map"] = load_config_file(path, self)
        return super().make_context(info_name, args, parent, **extra)
