"""Hardware-in-the-loop system tests and the device emulators they (and the demo) use."""
