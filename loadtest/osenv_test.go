package loadtest

import "os"

func osPID() int { return os.Getpid() }
