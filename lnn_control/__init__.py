"""lnn_control: liquid-network policies with a BarrierNet safety filter.

This file carries no logic on purpose: when the package is built with CMake the
rosidl-generated ``lnn_control`` package (holding ``lnn_control.msg``) and these
hand-written modules share one import path. Extending ``__path__`` lets a source
checkout see the generated messages installed in the environment.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
