"""`sftc audit`: what is wrong with the data before a run trains on it — duplicates, eval rows
leaked into training, conflicting answers, suspect rows — and which topics it covers thinly."""
