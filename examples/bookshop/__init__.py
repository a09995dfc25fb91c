"""bookshop: a tiny application for the dbtestcase example suite."""
