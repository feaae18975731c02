"""The offline real-photo demo set: where its photos come from and how the ImageFolder is assembled."""
