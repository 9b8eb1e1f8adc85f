"""Development tools that make or vendor models; never needed on the device."""
